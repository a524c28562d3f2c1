from twisted.application.service import ServiceMaker

karajo = ServiceMaker(
    "karajo",
    "karajo.tap",
    "A cron-like job runner managed over HTTP.",
    "karajo",
)
