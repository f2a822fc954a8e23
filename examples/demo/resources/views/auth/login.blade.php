@extends('layouts.app')

@section('title', 'Log in')

@section('content')
    <form method="POST" action="{{ route('login') }}">
        @csrf
        <label>E-mail <input type="email" name="email" value="{{ old('email') }}" required autofocus></label>
        @error('email')
            @include('components.alert', ['type' => 'danger', 'message' => $message])
        @enderror
        <label>Password <input type="password" name="password" required></label>
        <button type="submit">Log in</button>
    </form>
@endsection
