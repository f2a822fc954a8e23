@extends('layouts.app')

@section('title', 'Welcome')

@section('content')
    <h1>Welcome to {{ config('app.name') }}</h1>
    <p>Fresh arrivals this week:</p>
    <div class="grid">
        @foreach ($featured as $product)
            @include('components.product-card', ['product' => $product])
        @endforeach
    </div>
@endsection
