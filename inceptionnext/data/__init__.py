"""What every task reads: image files and folders, checked and named in errors, and the built-in digits."""
