"""Every word a user or operator reads (:mod:`bot.i18n.texts`)."""
