from django.urls import re_path

from instances.consumers import InstanceEventsConsumer

websocket_urlpatterns = [re_path(r"^api/v1/ws/?$", InstanceEventsConsumer.as_asgi())]
