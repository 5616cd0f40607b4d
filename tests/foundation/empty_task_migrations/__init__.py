"""The testapp host's migrations package before its first makemigrations: empty."""
