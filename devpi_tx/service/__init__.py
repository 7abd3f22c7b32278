"""Options, the service tree, the process supervisor, the server directory."""
