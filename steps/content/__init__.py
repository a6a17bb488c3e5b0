"""Content: the localized welcome (the article's GetLocalizedContent)."""
