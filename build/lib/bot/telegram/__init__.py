"""The Telegram side, on python-telegram-bot: handlers, keyboards, the tracker's
messenger, pacing under Telegram's flood limits, and the services a running bot shares.

Absolute ``import telegram`` inside this package is python-telegram-bot, not this package.
"""
