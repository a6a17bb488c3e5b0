"""Content: the localized welcome (the article's GetLocalizedContent) and AI moderation:
POST /content -> content.submitted -> AIContentModerator -> content.flagged | content.approved."""
