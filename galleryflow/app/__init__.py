"""Entry points: the CLI, the MCP server, the watch service, setup and deployments. The only part of galleryflow that imports flows/."""
