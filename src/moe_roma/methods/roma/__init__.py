"""methods/roma"""
