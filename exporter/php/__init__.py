"""Talking to PHP-FPM: the FastCGI client, the per-target endpoint, the PHP agent and config readers."""
