@extends('layouts.app')

@section('title', 'Your cart')

@section('content')
    <h1>Your cart</h1>
    <table>
        @foreach ($cart->lines as $line)
            <tr>
                <td>{{ $line->product->name }}</td>
                <td>{{ $line->quantity }}</td>
                <td>{{ number_format($line->total / 100, 2) }} &euro;</td>
            </tr>
        @endforeach
    </table>
    <p>Total: <strong>{{ number_format($cart->total / 100, 2) }} &euro;</strong></p>
@endsection
