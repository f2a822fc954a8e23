<footer>
    &copy; {{ date('Y') }} {{ config('app.name') }} &middot; <a href="{{ url('/privacy') }}">Privacy</a>
</footer>
