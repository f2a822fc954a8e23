<div class="alert alert-{{ $type ?? 'info' }}" role="alert">
    {{ $message }}
</div>
