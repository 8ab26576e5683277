"""The online feature store on Redis: layout and codec, publishing, the stores register."""
