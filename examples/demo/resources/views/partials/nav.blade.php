<nav class="navbar">
    <a href="{{ url('/') }}">{{ config('app.name') }}</a>
    <a href="{{ route('shop.index') }}">Shop</a>
    @auth
        <a href="{{ route('cart.show') }}">Cart ({{ $cartCount ?? 0 }})</a>
        <span>{{ auth()->user()->name }}</span>
    @else
        <a href="{{ route('login') }}">Log in</a>
    @endauth
</nav>
