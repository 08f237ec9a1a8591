"""Quality, speaker and complexity metrics (submodules import their heavy dependencies lazily)."""
