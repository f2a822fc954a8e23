<!DOCTYPE html>
<html lang="{{ str_replace('_', '-', app()->getLocale()) }}">
<head>
    <meta charset="utf-8">
    <title>@yield('title', config('app.name'))</title>
    <link rel="stylesheet" href="{{ asset('css/app.css') }}">
</head>
<body>
    @include('partials.nav')
    <main class="container">
        @if (session('status'))
            @include('components.alert', ['type' => 'success', 'message' => session('status')])
        @endif
        @yield('content')
    </main>
    @include('partials.footer')
</body>
</html>
