"""Users: the accounts table (shared with auth) and its CRUD API (the article's CreateUser)."""
