"""Chat platforms: one built-in plugin per platform, and `step.chat_reply`."""
