from django.apps import AppConfig


class DiscoveryConfig(AppConfig):
    name = "discovery"

    def ready(self) -> None:
        from core.crypto import register_encrypted_field
        from discovery import frames, runs
        from instances.election import on_leader_change
        from instances.frames import register_frame_handler
        from instances.services import on_socket_opened

        register_encrypted_field("discovery.DiscoverySeed", "credentials")
        register_frame_handler("discovery_progress", frames.handle_progress)
        register_frame_handler("discovery_complete", frames.handle_complete)
        # Runs follow the leadership: pending runs go to a new leader, running ones are dispatched again.
        on_leader_change(runs.on_leader_change)
        # A leader's socket that (re)opens gets the runs sent to it while it had none.
        on_socket_opened(runs.on_socket_opened)
