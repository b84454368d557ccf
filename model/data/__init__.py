"""Images and datasets: reading photos and COCO annotations, making synthetic scenes."""
