import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
# Build the Django app before importing anything that touches models (routing, consumers).
django_asgi_app = get_asgi_application()

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402

from core.events import remember_server_loop  # noqa: E402
from instances.routing import websocket_urlpatterns  # noqa: E402

# Instances are not browsers: no Origin check; the token in connect() is the authentication.
application = remember_server_loop(
    ProtocolTypeRouter({"http": django_asgi_app, "websocket": URLRouter(websocket_urlpatterns)})
)
