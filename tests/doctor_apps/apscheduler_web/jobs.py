from apscheduler.schedulers.background import BackgroundScheduler


def send_digest() -> None:
    print("sending the daily digest")


scheduler = BackgroundScheduler()
scheduler.add_job(send_digest, "cron", hour=8)
