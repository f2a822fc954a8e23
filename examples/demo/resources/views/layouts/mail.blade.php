<!DOCTYPE html>
<html>
<body style="font-family: sans-serif">
    <h2>{{ config('app.name') }}</h2>
    @yield('body')
    <p style="color: #888">You receive this e-mail because you have an account at {{ config('app.url') }}.</p>
</body>
</html>
