@extends('layouts.app')

@section('title', 'Shop')

@section('content')
    <h1>All products</h1>
    @forelse ($products as $product)
        @include('components.product-card', ['product' => $product])
    @empty
        @include('components.alert', ['type' => 'info', 'message' => 'Nothing on the shelves yet.'])
    @endforelse
    {{ $products->links() }}
@endsection
