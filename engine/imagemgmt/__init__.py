"""Image management: names and IDs (`catalog`), `tag`/`rmi` (`remove`), `inspect`/`history`
(`describe`), and moving images in and out as archives (`archive`, `load`, `save`)."""
