"""One-shot commands: export, import, fsck, gen-config, console scripts."""
