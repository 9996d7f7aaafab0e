"""Remote build agents (DESIGN §11): the wire protocol and the server-side actors."""
