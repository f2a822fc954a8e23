<?php
use Illuminate\Support\Facades\Route;

// What the app runs with: the test reads it through FPM to see which config is served.
Route::get('/feature', fn () => 'feature=' . config('shop.feature'));
