@extends('layouts.mail')

@section('body')
    <p>Hello {{ $order->customer->name }},</p>
    <p>Your order #{{ $order->number }} has shipped and should arrive by {{ $order->eta->format('l j F') }}.</p>
@endsection
