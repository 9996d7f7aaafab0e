"""Remote build agents (docs/design.md §11): the wire protocol and the server-side actors."""
