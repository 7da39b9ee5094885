"""The HeatPrompt application: command line, Gradio UI, services, scheduler, settings."""
