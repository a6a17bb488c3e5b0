"""Auth: sign up, log in (a JWT access token) and who am I."""
