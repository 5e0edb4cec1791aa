"""models/hooks"""
