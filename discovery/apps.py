from django.apps import AppConfig


class DiscoveryConfig(AppConfig):
    name = "discovery"

    def ready(self) -> None:
        # Imported here: the modules import models, which are ready only now.
        from discovery import frames, runs, schedules
        from instances.election import on_leader_change
        from instances.frames import register_frame_handler
        from instances.services import on_socket_opened
        from inventory.seeds import on_seeds_written
        from inventory.services import on_results_run

        register_frame_handler("discovery_progress", frames.handle_progress)
        register_frame_handler("discovery_complete", frames.handle_complete)
        # Runs follow the leadership: pending runs go to a new leader, running ones are dispatched again.
        on_leader_change(runs.on_leader_change)
        # A leader's socket that (re)opens gets the runs sent to it while it had none.
        on_socket_opened(runs.on_socket_opened)
        # Discovery results posted with a runId or seedId count on their run.
        on_results_run(runs.results_run)
        # Each seed's own schedule is a beat entry that follows the seed's writes.
        on_seeds_written(schedules.on_seeds_written)
