"""Images: references, the registry client, manifests, the content-addressed store and pulls.
Imported only by the commands and runs that name an image."""
