"""Who is calling and what they may do: API keys, OIDC/JWT bearer tokens, scopes, rate limits, body limits."""
