"""What people use: the `vigil` command, the Streamlit console, the HTTP API and webhooks."""
