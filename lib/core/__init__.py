"""The core layer every stage shares: configuration, artifact layout and records, CLI, small helpers."""
