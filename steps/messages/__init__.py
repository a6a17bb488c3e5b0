"""Messages: POST /messages -> message.sent -> ProcessMessage (store, state) and AnalyzeSentiment
(VADER) -> message.analyzed; the `chat` stream; daily CleanupOldMessages."""
