"""Small stateless building blocks of the dashboard's pages."""
