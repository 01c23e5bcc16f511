"""One module per `study` command; study.cli parses the command line and calls them."""
