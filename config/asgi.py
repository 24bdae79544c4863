import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
# Build the Django app before importing anything that touches models (routing, consumers).
django_asgi_app = get_asgi_application()

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from django.conf import settings  # noqa: E402

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
