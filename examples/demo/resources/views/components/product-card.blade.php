<article class="product-card">
    <img src="{{ $product->image_url }}" alt="{{ $product->name }}">
    <h3><a href="{{ route('shop.show', $product) }}">{{ $product->name }}</a></h3>
    <p class="price">{{ number_format($product->price / 100, 2) }} &euro;</p>
    @if ($product->stock === 0)
        <span class="badge">Sold out</span>
    @endif
</article>
