@extends('layouts.app')

@section('title', $product->name)

@section('content')
    <h1>{{ $product->name }}</h1>
    <p>{!! nl2br(e($product->description)) !!}</p>
    <form method="POST" action="{{ route('cart.add', $product) }}">
        @csrf
        <input type="number" name="quantity" value="1" min="1" max="{{ $product->stock }}">
        <button type="submit" @if ($product->stock === 0) disabled @endif>Add to cart</button>
    </form>
@endsection
