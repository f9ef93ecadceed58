"""The image provider: its API client, the breaker that routes around a failing model, and the account's balance."""
