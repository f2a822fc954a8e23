@extends('layouts.app')

@section('title', 'Server error')

@section('content')
    <h1>Something went wrong</h1>
    <p>We have been told and are looking into it.</p>
@endsection
