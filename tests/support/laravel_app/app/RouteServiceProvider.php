<?php
namespace App;
use Illuminate\Foundation\Support\Providers\RouteServiceProvider as Base;
use Illuminate\Support\Facades\Route;
class RouteServiceProvider extends Base
{
    public function boot()
    {
        $this->routes(function () {
            Route::middleware([])->group(base_path('routes/web.php'));
        });
    }
}
