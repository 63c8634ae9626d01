"""The one HTTP client every remote API goes through, and its errors."""
