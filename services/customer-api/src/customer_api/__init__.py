"""customer-api: the front door for shops and their e-commerce backends."""
