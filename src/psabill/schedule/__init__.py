"""When runs happen: the pure rules, the host cron plan, the crontab splice, the save and the exports."""
