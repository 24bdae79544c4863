import os

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
# Build the Django app before importing anything that touches models (routing, consumers).
django.setup(set_prefix=False)
from django.conf import settings  # noqa: E402

from core.asgi import LaneASGIHandler  # noqa: E402

# Each request's sync work in one of MAX_REQUESTS_RUNNING long-lived threads (core/asgi.py).
django_asgi_app = LaneASGIHandler(threads=settings.MAX_REQUESTS_RUNNING)

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402

from core.admission import AdmissionControl  # noqa: E402
from core.events import remember_server_loop  # noqa: E402
from instances.routing import websocket_urlpatterns  # noqa: E402

# Beyond MAX_REQUESTS_IN_FLIGHT, HTTP requests get 503 + Retry-After at once (docs/operations.md).
http_app = AdmissionControl(
    django_asgi_app, limit=settings.MAX_REQUESTS_IN_FLIGHT, running=settings.MAX_REQUESTS_RUNNING
)
# Instances are not browsers: no Origin check; the token in connect() is the authentication.
application = remember_server_loop(
    ProtocolTypeRouter({"http": http_app, "websocket": URLRouter(websocket_urlpatterns)})
)
