from webhook import create_app

app = create_app()
