"""Command-line programs only: each parses arguments, calls one library function and prints. Nothing imports them."""
